# Asterisk 22 from Debian's own package, configured with exactly the project's
# asterisk/*.conf and dialplans/*.conf (as `ppcswitch sandbox` does).
# Build context: the repository root (docker-compose.yml sets it).
FROM debian:sid-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      asterisk asterisk-modules asterisk-core-sounds-en-gsm ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Debian's stock configuration is replaced, not merged: modules.conf loads an explicit list.
RUN rm -rf /etc/asterisk && mkdir -m 0755 /etc/asterisk
COPY asterisk/*.conf dialplans/*.conf /etc/asterisk/
COPY docker/asterisk-entrypoint.sh /usr/local/bin/asterisk-entrypoint.sh

# SIP signalling and the RTP range of asterisk/rtp.conf (the compose file uses the
# host's network, so these are the host's ports; see README "Deploying with docker-compose").
EXPOSE 5060/udp 10000-20000/udp

ENTRYPOINT ["/usr/local/bin/asterisk-entrypoint.sh"]
# -f: foreground (the container's main process); -n: no colours in the log.
CMD ["asterisk", "-f", "-n"]
