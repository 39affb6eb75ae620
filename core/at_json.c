/* at_json: not written yet */
