/* A connection: frames in, one detached thread per operation, whole responses out. */
#ifndef PORTCULLIS_SERVER_H
#define PORTCULLIS_SERVER_H

enum conn_end { END_HANGUP = 0, END_MALFORMED = 2 };

/* Serves requests read from in_fd, answers on out_fd (the same descriptor for a
 * socket). Returns when the peer hung up or sent a malformed frame, after every
 * operation it started has finished. */
enum conn_end serve(int in_fd, int out_fd, const char *const *symlink_dirs);

#endif
