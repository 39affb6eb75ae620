/* at_driver: not written yet */
