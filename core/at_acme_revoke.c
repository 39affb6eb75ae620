/* at_acme_revoke: not written yet */
