/* What forage.url lends the rest of forage.web. */
#ifndef FORAGE_URL_H
#define FORAGE_URL_H

/* Returns a malloc'd copy of u with the password of its userinfo replaced by "***", or
   NULL on out of memory. When secret is not NULL it receives a malloc'd copy of the
   password (NULL when there is none; on out of memory the result is NULL too). Works on
   any string, parsable or not: it masks too much rather than too little. */
char *url_mask_password(const char *u, char **secret);

#endif
