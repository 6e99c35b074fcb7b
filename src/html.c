/* Placeholder: being written. */
#include "core.h"

void forage_open_html(lua_State *L) { (void)L; }
