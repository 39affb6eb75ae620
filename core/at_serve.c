/* at_serve: not written yet */
