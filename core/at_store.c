/* at_store: not written yet */
