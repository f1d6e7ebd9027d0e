/* The CLI's one way to load a model file: --model FILE with an optional --arch TEXT (the text
 * form of a description, parsed by the library's sp_model_desc_parse), and the chain it built as
 * text for the reports. No state; any thread.
 */
#include <stdio.h>

#include "model_open.h"

sp_status sp_cli_model_open(sp_device *dev, const char *path, const char *arch, sp_dtype dt,
                            sp_model **out) {
  if (!arch) return sp_model_load(dev, path, dt, out);
  sp_model_desc *desc = NULL;
  sp_status st = sp_model_desc_parse(arch, &desc);
  if (st == SP_OK) st = sp_model_load_desc(dev, path, desc, dt, out);
  sp_model_desc_free(desc);
  return st;
}

const char *sp_cli_model_chain(const sp_model *m, char *buf, size_t size) {
  size_t n = sp_model_describe(m, buf, size);
  if (n >= size && size > 4) snprintf(buf + size - 4, 4, "...");
  return buf;
}
