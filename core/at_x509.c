/* at_x509: not written yet */
