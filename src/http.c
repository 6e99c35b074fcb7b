/* Placeholder: being written. */
#include "core.h"

void forage_open_http(lua_State *L) { (void)L; }
