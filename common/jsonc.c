/* jsonc: see jsonc.h. */
#include "jsonc.h"

void json_strip_comments(char *buf, size_t len)
{
    enum { CODE, STRING, ESCAPE, LINE, BLOCK } st = CODE;

    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        switch (st) {
        case CODE:
            if (c == '"') {
                st = STRING;
            } else if (c == '/' && i + 1 < len && buf[i + 1] == '/') {
                st = LINE;
                buf[i] = ' ';
            } else if (c == '/' && i + 1 < len && buf[i + 1] == '*') {
                st = BLOCK;
                buf[i] = ' ';
                buf[++i] = ' ';
            }
            break;
        case STRING:
            if (c == '\\')
                st = ESCAPE;
            else if (c == '"')
                st = CODE;
            break;
        case ESCAPE:
            st = STRING;
            break;
        case LINE:
            if (c == '\n')
                st = CODE;
            else
                buf[i] = ' ';
            break;
        case BLOCK:
            if (c == '*' && i + 1 < len && buf[i + 1] == '/') {
                buf[i] = ' ';
                buf[++i] = ' ';
                st = CODE;
            } else if (c != '\n') {
                buf[i] = ' ';
            }
            break;
        }
    }
}

int json_line_of(const char *buf, const char *pos)
{
    int line = 1;
    for (const char *p = buf; p < pos; p++)
        line += *p == '\n';
    return line;
}
