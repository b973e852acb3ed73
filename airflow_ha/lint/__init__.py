"""The lint gate: prove the manifests before anything touches a cluster.

gate.py runs it: it renders every overlay (render.py), runs the checks of registry.py on what
it gets, and reports each problem (problems.py) with its rule ID, file, object and field
(fields.py). Each check is a module of checks/; the Airflow check runs Airflow's own code in
a subprocess (airflow_process.py). Nothing is imported here, so that the subprocess starts fast.
"""
