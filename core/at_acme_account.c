/* at_acme_account: not written yet */
