/* at_acme_dir: not written yet */
