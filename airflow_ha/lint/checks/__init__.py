"""The checks of the lint gate, one module each: NAME, RULES (rule ID -> what it catches) and run()."""
