# Git servers for the source tests: smart HTTP(S) through git-http-backend behind
# lighttpd (basic auth) and nginx + fcgiwrap (bearer token), git daemon, openssh-server; plus the
# build dependencies of gix's curl HTTP transport.
want git /usr/lib/git-core/git-http-backend
want git /usr/lib/git-core/git-daemon
want lighttpd lighttpd
want apache2-utils htpasswd
want nginx /usr/sbin/nginx
want fcgiwrap /usr/sbin/fcgiwrap
want openssh-server /usr/sbin/sshd
want openssh-client ssh-keygen
want libcurl4-openssl-dev /usr/include/x86_64-linux-gnu/curl/curl.h
want libssl-dev /usr/include/openssl/ssl.h
want pkg-config pkg-config
want zlib1g-dev /usr/include/zlib.h
want lighttpd-mod-openssl /usr/lib/lighttpd/mod_openssl.so
