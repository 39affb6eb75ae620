/* at_acme_problem: not written yet */
