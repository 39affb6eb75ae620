/* responder: not written yet */
