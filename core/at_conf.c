/* at_conf: not written yet */
