"""Task code of the optasia_etl_pipeline DAG (imported by the DAG file; the
heavy imports happen inside the task functions, at run time)."""
