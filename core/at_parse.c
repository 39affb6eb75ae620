/* at_parse: not written yet */
