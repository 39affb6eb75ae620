/* at_time: not written yet */
