"""Task code of the optasia_etl_pipeline DAG (imported by the DAG file; the
heavy imports happen inside the task functions, at run time).

``contract`` is the project's spark_jobs/contract.py, which the airflow role
ships into this package: the DAG and the job read one copy of the contract."""
