/* at_acme_order: not written yet */
