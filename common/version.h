/* version.h - chatq's version, the one place it is written: every binary's
 * --version, the probes, the metrics' build info and the worker heartbeats. */
#ifndef CHATQ_VERSION_H
#define CHATQ_VERSION_H

#define CHATQ_VERSION "0.9.0"

#endif
