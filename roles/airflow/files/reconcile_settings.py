"""Make Airflow's Variables and Connections what the inventory says.

Runs inside the api-server container (`python -c <this file>`), reads the
spec the airflow role renders (JSON on stdin), and changes only what differs.
With OPTASIA_RECONCILE_CHECK=1 (Ansible's check mode) it changes nothing and
says what it would change. Prints one JSON line: {"changed": [...], "unchanged": [...]}.
"""

import json
import os
import sys

from airflow.models import Connection, Variable
from airflow.utils.session import create_session

CHECK = os.environ.get("OPTASIA_RECONCILE_CHECK", "0") == "1"


def normalise_extra(extra):
    return json.loads(extra) if isinstance(extra, str) and extra else (extra or {})


def main():
    spec = json.load(sys.stdin)
    changed, unchanged = [], []
    with create_session() as session:
        for key, value in sorted(spec.get("variables", {}).items()):
            text = json.dumps(value, indent=2, sort_keys=True)
            current = session.query(Variable).filter(Variable.key == key).one_or_none()
            if current is None:
                if not CHECK:
                    session.add(Variable(key=key, val=text, description="provisioned by Ansible (roles/airflow)"))
                changed.append(f"variable {key}")
            elif current.val != text:
                if not CHECK:
                    current.set_val(text)
                changed.append(f"variable {key}")
            else:
                unchanged.append(f"variable {key}")
        for conn_id, c in sorted(spec.get("connections", {}).items()):
            want = {
                "conn_type": c["conn_type"],
                "host": c.get("host") or None,
                "port": int(c["port"]) if c.get("port") not in (None, "") else None,
                "schema": c.get("schema") or None,
                "login": c.get("login") or None,
                "password": c.get("password") or None,
                "extra": normalise_extra(c.get("extra")),
            }
            current = session.query(Connection).filter(Connection.conn_id == conn_id).one_or_none()
            if current is not None:
                have = {
                    "conn_type": current.conn_type, "host": current.host, "port": current.port,
                    "schema": current.schema, "login": current.login, "password": current.password or None,
                    "extra": normalise_extra(current.extra),
                }
                if have == want:
                    unchanged.append(f"connection {conn_id}")
                    continue
                if CHECK:
                    changed.append(f"connection {conn_id}")
                    continue
                session.delete(current)
                session.flush()
            if CHECK:
                changed.append(f"connection {conn_id}")
                continue
            session.add(Connection(conn_id=conn_id, conn_type=want["conn_type"], host=want["host"],
                                   port=want["port"], schema=want["schema"], login=want["login"],
                                   password=want["password"], extra=json.dumps(want["extra"], sort_keys=True),
                                   description="provisioned by Ansible (roles/airflow)"))
            changed.append(f"connection {conn_id}")
    print(json.dumps({"changed": changed, "unchanged": unchanged}))


main()
