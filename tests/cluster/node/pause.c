/* The sandbox ("pause") process of the real node's pods: PID 1 of each pod, it holds the pod's
 * namespaces open, reaps orphaned children, and exits 0 on SIGINT or SIGTERM. Built statically
 * by tests/cluster/node.sh (cc -static), so its image is this one file. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction on_stop = {.sa_handler = stop};
  struct sigaction on_child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  if (getpid() != 1) {
    /* Outside a PID namespace it would reap other processes' children. */
    write(2, "pause: must run as PID 1\n", 25);
  }
  if (sigaction(SIGINT, &on_stop, NULL) < 0 || sigaction(SIGTERM, &on_stop, NULL) < 0 ||
      sigaction(SIGCHLD, &on_child, NULL) < 0)
    return 1;
  for (;;) pause();
}
