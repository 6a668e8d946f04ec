#!/bin/sh
# Users and permissions of the data center's mosquitto (2.0+, mosquitto.conf: the dynamic security
# plugin). Every site reaches only its own qx/v1/<site>/ topics; only the workers may subscribe the
# solvers' shared group $share/qx-solvers/... (the plugin checks a subscription's whole filter,
# $share/<group>/ included, so a site asking to join the group is refused; mosquitto 2.0's acl_file
# grants every subscription and checks reads only at delivery, where a job handed to a site is lost).
#
# Once, broker stopped (the file named by plugin_opt_config_file, with the admin user):
#   mosquitto_ctrl dynsec init /var/lib/mosquitto/dynamic-security.json admin
# Then, broker running:
#   QX_ADMIN_PASSWORD=... QX_SOLVER_1_PASSWORD=... QX_SOLVER_2_PASSWORD=... QX_INGEST_PASSWORD=... \
#   QX_HISTORIAN_PASSWORD=... QX_GUMI_PASSWORD=... QX_OSAN_PASSWORD=... sh dynsec.sh
#
# Add a site: a `site NAME PASSWORD` line below (the username is the site id); a worker: a `worker`
# line (one user per worker: the client id is the username, mosquitto.conf). The script can run again:
# it recreates what it names. Where it reaches the broker: QX_MQTT_HOST (localhost), QX_MQTT_PORT (8883),
# QX_MQTT_CAFILE (/etc/mosquitto/certs/ca.pem), QX_ADMIN_USER (admin).
set -eu

ctl() {
  mosquitto_ctrl -h "${QX_MQTT_HOST:-localhost}" -p "${QX_MQTT_PORT:-8883}" \
    --cafile "${QX_MQTT_CAFILE:-/etc/mosquitto/certs/ca.pem}" \
    -u "${QX_ADMIN_USER:-admin}" -P "$QX_ADMIN_PASSWORD" dynsec "$@" >/dev/null
}

role() {  # NAME ACLSPEC...: (re)created with these ACLs, each "type topic" allowed
  ctl deleteRole "$1" 2>/dev/null || true
  ctl createRole "$1"
  name=$1
  shift
  for acl in "$@"; do
    # shellcheck disable=SC2086 # "type topic": two words
    ctl addRoleACL "$name" $acl allow
  done
}

client() {  # USERNAME PASSWORD ROLE: (re)created with that password and role
  ctl deleteClient "$1" 2>/dev/null || true
  ctl createClient "$1" -p "$2"
  ctl addClientRole "$1" "$3"
}

site() {  # NAME PASSWORD: its own namespace, nothing else (no $share filter: it cannot join a group)
  role "site-$1" \
    "publishClientSend qx/v1/$1/#" "publishClientReceive qx/v1/$1/#" "subscribePattern qx/v1/$1/#"
  client "$1" "$2" "site-$1"
}

worker() {  # USERNAME PASSWORD
  client "$1" "$2" solver
}

# Nothing is allowed that a role does not allow: sending, subscribing and (the plugin's default is
# allow) receiving. A connection without a client here is refused (mosquitto.conf: allow_anonymous false).
ctl setDefaultACLAccess publishClientSend deny
ctl setDefaultACLAccess publishClientReceive deny
ctl setDefaultACLAccess subscribe deny

# The workers: every site's jobs through the solvers' shared subscription, answers on the sites' result
# topics, the start-up probe (site qx-probe: no real site may have that name) and its answers.
role solver \
  "subscribePattern \$share/qx-solvers/qx/v1/+/jobs" "publishClientReceive qx/v1/+/jobs" \
  "publishClientSend qx/v1/+/results/#" \
  "publishClientSend qx/v1/qx-probe/jobs" \
  "subscribePattern qx/v1/qx-probe/results/#" "publishClientReceive qx/v1/qx-probe/results/#"
# The telemetry consumer (ingest): every site's telemetry in, confirms out (connectors/confirm.py).
role ingest \
  "subscribePattern qx/v1/+/telemetry" "publishClientReceive qx/v1/+/telemetry" \
  "publishClientSend qx/v1/+/confirm"
# The historian (`qxedge historian`): every site's history batches through its shared group, confirms.
role historian \
  "subscribePattern \$share/qx-historians/qx/v1/+/history" "subscribePattern qx/v1/+/history" \
  "publishClientReceive qx/v1/+/history" "publishClientSend qx/v1/+/confirm"

worker solver-1 "$QX_SOLVER_1_PASSWORD"
worker solver-2 "$QX_SOLVER_2_PASSWORD"
client ingest "$QX_INGEST_PASSWORD" ingest
client historian "$QX_HISTORIAN_PASSWORD" historian  # one user per historian: add `client historian-2 ...`

site gumi "$QX_GUMI_PASSWORD"
site osan "$QX_OSAN_PASSWORD"
