"""Make Airflow's Variables and Connections what the inventory says.

Runs inside the api-server container (`python - < this file`), reads the spec
the airflow role rendered into /run/secrets/settings.json, and changes only
what differs. Prints one JSON line: {"changed": [...], "unchanged": [...]}.
"""

import json

from airflow.models import Connection, Variable
from airflow.utils.session import create_session

SPEC = "/run/secrets/settings.json"


def normalise_extra(extra):
    return json.loads(extra) if isinstance(extra, str) and extra else (extra or {})


def main():
    with open(SPEC, encoding="utf-8") as fh:
        spec = json.load(fh)
    changed, unchanged = [], []
    with create_session() as session:
        for key, value in sorted(spec.get("variables", {}).items()):
            text = json.dumps(value, indent=2, sort_keys=True)
            current = session.query(Variable).filter(Variable.key == key).one_or_none()
            if current is None:
                session.add(Variable(key=key, val=text, description="provisioned by Ansible (roles/airflow)"))
                changed.append(f"variable {key}")
            elif current.val != text:
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
                session.delete(current)
                session.flush()
            session.add(Connection(conn_id=conn_id, conn_type=want["conn_type"], host=want["host"],
                                   port=want["port"], schema=want["schema"], login=want["login"],
                                   password=want["password"], extra=json.dumps(want["extra"], sort_keys=True),
                                   description="provisioned by Ansible (roles/airflow)"))
            changed.append(f"connection {conn_id}")
    print(json.dumps({"changed": changed, "unchanged": unchanged}))


main()
