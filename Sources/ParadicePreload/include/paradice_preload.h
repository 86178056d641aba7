/* Public surface of the preload frontend: nothing; it works by interposing libc calls. */
#ifndef PARADICE_PRELOAD_H
#define PARADICE_PRELOAD_H
#endif
