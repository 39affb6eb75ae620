/* at_jose: not written yet */
