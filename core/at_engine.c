/* at_engine: not written yet */
