/* at_acme_op: not written yet */
