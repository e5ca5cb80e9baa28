/*
 * jsonc: configuration files are JSON with comments. json_strip_comments() blanks out
 * // line comments and block comments in place (outside strings), keeping every newline
 * so that error positions still point at the right line. The result is plain JSON.
 */
#ifndef MLK_JSONC_H
#define MLK_JSONC_H

#include <stddef.h>

void json_strip_comments(char *buf, size_t len);

/* 1-based line number of position pos in buf. */
int json_line_of(const char *buf, const char *pos);

#endif
