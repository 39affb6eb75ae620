/* at_live: not written yet */
