"""``hey`` block (taskgen): prints a greeting."""

HelloWorld = {"criticaltime": 1000, "executiontime": 1000, "pkg": "hey", "quota": "1M"}
