"""Task code of the optasia_etl_pipeline DAG, one module per kind: settings
(the Variable, the Connections, WebHDFS and JMX), sensors (wait_for_landing),
operators (ingest_raw's Bash step, the spark-job container), checks
(check_infrastructure, the quality gate), stages (batch id, publish, cleanup)
and alerts. The heavy imports happen inside the task functions, at run time.

``contract``, ``errors``, ``publish`` and ``webhdfs`` are the project's
spark_jobs modules of those names, which the airflow role ships into this
package: the DAG and the job read one copy of each."""
