#!/usr/bin/env bash
# Starts one real git server on a free 127.0.0.1 port, serving the bare repositories in
# REPOS-DIR, and prints what a client needs as key=value lines on stdout:
#   url=<base URL; append <repo>.git>   run=<run dir; give it to stop.sh>
#   ca=<CA certificate file>            (https, bearer)
#   username=/password= or token=       (https, bearer; override with GITOPS_GIT_USER,
#                                        GITOPS_GIT_PASSWORD, GITOPS_GIT_TOKEN)
#   identity=/known_hosts=              (ssh: deploy key and known_hosts line)
#   host_key=/authorized_keys=          (ssh: the server's public host key; the file that
#                                        authorizes client keys, read at every login)
#
#   tests/git/serve.sh https|http|bearer|daemon|ssh REPOS-DIR [RUN-DIR]
#
# Kinds: https = lighttpd + git-http-backend, basic auth, TLS with a throwaway CA;
#        http = the same without TLS and without auth (insecure: true sources);
#        bearer = nginx + fcgiwrap + git-http-backend, TLS, requires "Authorization: Bearer <token>";
#        daemon = git daemon (git://); ssh = Debian's sshd with a throwaway host key and deploy key
#        (accepts GIT_PROTOCOL from the client, so protocol v2 is used, unless
#        GITOPS_SSH_ACCEPT_ENV=0: then git falls back to protocol v0).
# Every process started is recorded in RUN-DIR/pids; tests/git/stop.sh RUN-DIR stops exactly those.
set -euo pipefail
kind=${1:?usage: serve.sh https|http|bearer|daemon|ssh REPOS-DIR [RUN-DIR]}
repos=$(cd "${2:?repos dir}" && pwd)
run=${3:-$(mktemp -d /tmp/gitops-git-XXXXXX)}
mkdir -p "$run"
run=$(cd "$run" && pwd)
: > "$run/pids"
user=${GITOPS_GIT_USER:-gitops}
password=${GITOPS_GIT_PASSWORD:-gitops-test-password}
token=${GITOPS_GIT_TOKEN:-gitops-test-token}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # wait_port PORT
  for _ in $(seq 1 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "server on port $1 did not start; logs in $run" >&2
  return 1
}

record_pidfile() { # record_pidfile FILE
  for _ in $(seq 1 100); do [ -s "$1" ] && break; sleep 0.05; done
  cat "$1" >> "$run/pids"
}

make_tls() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=gitops-test-ca" \
    -keyout "$run/ca.key" -out "$run/ca.crt" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$run/server.key" -out "$run/server.csr" >/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$run/san.ext"
  openssl x509 -req -in "$run/server.csr" -CA "$run/ca.crt" -CAkey "$run/ca.key" \
    -CAcreateserial -days 2 -extfile "$run/san.ext" -out "$run/server.crt" >/dev/null 2>&1
  cat "$run/server.crt" "$run/server.key" > "$run/server.pem"
}

lighttpd_conf() { # lighttpd_conf PORT TLS(0|1) AUTH(0|1)
  {
    echo "server.document-root = \"$repos\""
    echo 'server.bind = "127.0.0.1"'
    echo "server.port = $1"
    echo "server.pid-file = \"$run/lighttpd.pid\""
    echo "server.errorlog = \"$run/lighttpd-error.log\""
    echo 'server.modules = ("mod_alias", "mod_setenv", "mod_auth", "mod_authn_file", "mod_cgi", "mod_openssl")'
    # Stream responses as git-http-backend writes them, like real git servers: lighttpd's
    # default buffers a whole pack before sending its first byte.
    echo 'server.stream-response-body = 2'
    if [ "$2" = 1 ]; then
      echo 'ssl.engine = "enable"'
      echo "ssl.pemfile = \"$run/server.pem\""
    fi
    echo 'alias.url = ("/git/" => "/usr/lib/git-core/git-http-backend/")'
    echo '$HTTP["url"] =~ "^/git/" {'
    echo '  cgi.assign = ("" => "")'
    echo "  setenv.add-environment = (\"GIT_PROJECT_ROOT\" => \"$repos\", \"GIT_HTTP_EXPORT_ALL\" => \"1\")"
    if [ "$3" = 1 ]; then
      echo '  auth.backend = "htpasswd"'
      echo "  auth.backend.htpasswd.userfile = \"$run/htpasswd\""
      echo '  auth.require = ("/git/" => ("method" => "basic", "realm" => "git", "require" => "valid-user"))'
    fi
    echo '}'
  } > "$run/lighttpd.conf"
}

case "$kind" in
  https|http)
    port=$(free_port)
    if [ "$kind" = https ]; then
      make_tls
      htpasswd -bc "$run/htpasswd" "$user" "$password" >/dev/null 2>&1
      lighttpd_conf "$port" 1 1
      scheme=https
    else
      lighttpd_conf "$port" 0 0
      scheme=http
    fi
    lighttpd -f "$run/lighttpd.conf"
    record_pidfile "$run/lighttpd.pid"
    wait_port "$port"
    echo "url=$scheme://127.0.0.1:$port/git/"
    if [ "$kind" = https ]; then
      echo "ca=$run/ca.crt"; echo "username=$user"; echo "password=$password"
    fi
    ;;
  bearer)
    port=$(free_port)
    make_tls
    mkdir -p "$run/nginx-tmp"
    fcgiwrap -s "unix:$run/fcgiwrap.sock" > "$run/fcgiwrap.log" 2>&1 &
    echo $! >> "$run/pids"
    {
      [ "$(id -u)" = 0 ] && echo 'user root;'
      echo 'daemon on;'
      echo 'worker_processes 1;'
      echo "pid $run/nginx.pid;"
      echo "error_log $run/nginx-error.log;"
      echo 'events { worker_connections 64; }'
      echo 'http {'
      echo '  access_log off;'
      for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $run/nginx-tmp/$t;"; done
      echo '  map $http_authorization $bearer_ok {'
      echo '    default 0;'
      echo "    \"Bearer $token\" 1;"
      echo '  }'
      echo '  server {'
      echo "    listen 127.0.0.1:$port ssl;"
      echo "    ssl_certificate $run/server.crt;"
      echo "    ssl_certificate_key $run/server.key;"
      echo '    location ~ ^/git(/.*)$ {'
      echo '      if ($bearer_ok = 0) { return 401; }'
      echo '      include /etc/nginx/fastcgi_params;'
      echo "      fastcgi_pass unix:$run/fcgiwrap.sock;"
      echo '      fastcgi_param SCRIPT_FILENAME /usr/lib/git-core/git-http-backend;'
      echo "      fastcgi_param GIT_PROJECT_ROOT $repos;"
      echo '      fastcgi_param GIT_HTTP_EXPORT_ALL 1;'
      echo '      fastcgi_param PATH_INFO $1;'
      echo '      fastcgi_param REMOTE_USER bearer;'
      echo '      fastcgi_param GIT_PROTOCOL $http_git_protocol;'
      echo '    }'
      echo '  }'
      echo '}'
    } > "$run/nginx.conf"
    for _ in $(seq 1 100); do [ -S "$run/fcgiwrap.sock" ] && break; sleep 0.05; done
    nginx -c "$run/nginx.conf" -p "$run" -e "$run/nginx-error.log"
    record_pidfile "$run/nginx.pid"
    wait_port "$port"
    echo "url=https://127.0.0.1:$port/git/"
    echo "ca=$run/ca.crt"; echo "token=$token"
    ;;
  daemon)
    port=$(free_port)
    git daemon --reuseaddr --export-all --base-path="$repos" --listen=127.0.0.1 --port="$port" \
      --pid-file="$run/daemon.pid" --detach "$repos"
    record_pidfile "$run/daemon.pid"
    wait_port "$port"
    echo "url=git://127.0.0.1:$port/"
    ;;
  ssh)
    port=$(free_port)
    mkdir -p /run/sshd 2>/dev/null || true
    ssh-keygen -q -t ed25519 -N '' -f "$run/host_key"
    ssh-keygen -q -t ed25519 -N '' -f "$run/deploy_key"
    login=$(id -un)
    # Only git's upload/receive-pack may run with the deploy key.
    printf 'restrict %s\n' "$(cat "$run/deploy_key.pub")" > "$run/authorized_keys"
    chmod 600 "$run/authorized_keys"
    {
      echo "Port $port"
      echo 'ListenAddress 127.0.0.1'
      echo "HostKey $run/host_key"
      echo "PidFile $run/sshd.pid"
      echo "AuthorizedKeysFile $run/authorized_keys"
      echo 'PasswordAuthentication no'
      echo 'KbdInteractiveAuthentication no'
      echo 'PermitRootLogin prohibit-password'
      echo 'StrictModes no'
      echo 'UsePAM no'
      echo 'PrintMotd no'
      echo 'AllowTcpForwarding no'
      echo 'X11Forwarding no'
      echo 'Subsystem sftp internal-sftp'
      [ "${GITOPS_SSH_ACCEPT_ENV:-1}" = 0 ] || echo 'AcceptEnv GIT_PROTOCOL'
    } > "$run/sshd_config"
    /usr/sbin/sshd -f "$run/sshd_config" -E "$run/sshd.log"
    record_pidfile "$run/sshd.pid"
    wait_port "$port"
    printf '[127.0.0.1]:%s %s\n' "$port" "$(cut -d' ' -f1,2 "$run/host_key.pub")" > "$run/known_hosts"
    echo "url=ssh://$login@127.0.0.1:$port$repos/"
    echo "identity=$run/deploy_key"
    echo "known_hosts=$run/known_hosts"
    echo "host_key=$run/host_key.pub"
    echo "authorized_keys=$run/authorized_keys"
    ;;
  *) echo "unknown kind '$kind' (https|http|bearer|daemon|ssh)" >&2; exit 2 ;;
esac
echo "run=$run"
