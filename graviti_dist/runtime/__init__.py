"""How our processes start and write: Ray sessions, the runtime_env and worker hook,
memory release between stages, and outputs staged beside their destination.

Every stage uses these; they import no torch or DGL at the top level, because Ray
workers load them before their first task (see ``worker_setup``).
"""
