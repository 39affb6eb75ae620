/* at_status: not written yet */
