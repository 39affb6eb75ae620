/* at_acme_client: not written yet */
