#!/bin/sh
# Users and permissions of a RabbitMQ node for the qxedge data center (RabbitMQ 3.10+, rabbitmq_mqtt on):
# every site reaches only its own topics (topic permissions on amq.topic, the MQTT plugin's exchange) and
# its own MQTT subscription queues; only the workers' user reads the solvers' quorum queue.
#
#   QX_SOLVER_PASSWORD=... QX_GUMI_PASSWORD=... QX_OSAN_PASSWORD=... sh setup.sh
#
# Add a site: a `site NAME PASSWORD` line below. RABBITMQCTL picks another rabbitmqctl (a node of its own).
# With rabbitmq.conf (no anonymous MQTT logins) and advanced.config (with `qxedge rabbitmq-auth`: a site
# cannot take another site's client id) from this folder; TLS listeners in production.
set -eu
ctl=${RABBITMQCTL:-rabbitmqctl}

user() {  # NAME PASSWORD: (re)created with that password
  "$ctl" delete_user "$1" >/dev/null 2>&1 || true
  "$ctl" add_user "$1" "$2" >/dev/null
}

site() {  # NAME PASSWORD
  user "$1" "$2"
  # queues: only the MQTT plugin's subscription queues of this site's client ids (qxedge-<role>-<site>
  # with an optional -<8 hex>, as `qxedge rabbitmq-auth` allows: qxedge-uplink-<site>); exchanges:
  # amq.topic, through which every MQTT message goes
  # (the site id as a regular expression: its dots escaped, so site o.an is not osan)
  re=$(printf '%s' "$1" | sed 's/\./\\./g')
  q="mqtt-subscription-qxedge-[a-z]+-$re(-[0-9a-f]{8})?qos[01]"
  "$ctl" set_permissions -p / "$1" "^$q\$" "^(amq\\.topic|$q)\$" "^(amq\\.topic|$q)\$" >/dev/null
  # routing keys (MQTT topics with / as .): its own namespace only, for publishing and subscribing
  "$ctl" set_topic_permissions -p / "$1" amq.topic "^qx\\.v1\\.$re\\." "^qx\\.v1\\.$re\\." >/dev/null
}

# The workers: the quorum queue qx-solvers (declared and bound by the first worker), every site's jobs
# in, every site's results out, the start-up probe (site qx-probe) over MQTT.
user solver "$QX_SOLVER_PASSWORD"
"$ctl" set_permissions -p / solver "^(qx-solvers|mqtt-subscription-.*)\$" "^(amq\\.topic|qx-solvers|mqtt-subscription-.*)\$" "^(amq\\.topic|qx-solvers|mqtt-subscription-.*)\$" >/dev/null
"$ctl" set_topic_permissions -p / solver amq.topic "^qx\\.v1\\.[^.]+\\.(results\\..+|jobs)\$" "^qx\\.v1\\.([^.]+\\.jobs|qx-probe\\.results\\..+)\$" >/dev/null

site gumi "$QX_GUMI_PASSWORD"
site osan "$QX_OSAN_PASSWORD"
[ -n "${QX_KEEP_GUEST:-}" ] || "$ctl" delete_user guest >/dev/null 2>&1 || true  # no default user
