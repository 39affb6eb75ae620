/* at_http: not written yet */
