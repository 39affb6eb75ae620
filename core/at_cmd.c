/* at_cmd: not written yet */
