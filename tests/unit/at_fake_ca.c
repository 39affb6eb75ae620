/* fake CA: not written yet */
