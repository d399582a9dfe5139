#!/bin/sh
# Writes the AMI secret manager.conf includes, optionally re-binds SIP, then runs Asterisk.
set -eu
if [ -z "${PPCSWITCH_AMI_SECRET:-}" ]; then
  echo "asterisk: PPCSWITCH_AMI_SECRET is empty; set it in .env (the controller uses the same value)" >&2
  exit 2
fi
umask 027
printf 'secret = %s\n' "$PPCSWITCH_AMI_SECRET" > /etc/asterisk/manager_ppcswitch.conf
chgrp asterisk /etc/asterisk/manager_ppcswitch.conf
# The repository's pjsip.conf binds SIP to loopback (safe default); ASTERISK_SIP_BIND
# (for example 203.0.113.5:5060) puts it on the address the carriers reach.
if [ -n "${ASTERISK_SIP_BIND:-}" ]; then
  sed -i "s/^bind = 127\.0\.0\.1:5060$/bind = ${ASTERISK_SIP_BIND}/" /etc/asterisk/pjsip.conf
fi
mkdir -p /var/run/asterisk /var/spool/asterisk/monitor
chown asterisk:asterisk /var/run/asterisk /var/spool/asterisk/monitor
exec "$@"
