// Compile test: the public header is valid, warning-free C++ with C linkage.
#include "streampool.h"
int sp_header_cxx_compiles();
int sp_header_cxx_compiles() {
  sp_device_config cfg{};
  cfg.stream_mode = SP_STREAMS_EXCLUSIVE;
  sp_event ev{};
  return static_cast<int>(cfg.stream_mode) + static_cast<int>(ev.id) +
         (sp_status_str(SP_OK) ? 0 : 1);
}
