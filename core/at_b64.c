/* at_b64: not written yet */
