"""MetaSchedule tuning per target preset, and the database a normal compile applies.

`python -m compile --tune N` runs N more trials (compile.tuning.tune) and adds them to the preset's
database (targets/tuning/<preset>/database_*.json, compile.tuning.database); every build of that
preset then applies it (compile.tuning.apply). Policy: tuning also measures each function's hand
schedule (compile.tuning.hand), and a tuned record replaces the hand rules only where it measured
faster on the same target; functions whose hand schedule uses tensor intrinsics (int8 dot products)
are not tuned. Kept import-light: the modules import TVM, this package does not.
"""
