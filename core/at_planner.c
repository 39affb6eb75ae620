/* at_planner: not written yet */
