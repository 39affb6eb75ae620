/* at_key: not written yet */
