/* at_acme_ari: not written yet */
