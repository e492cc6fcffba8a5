{
  "targets": [
    {
      "target_name": "portcullis_native",
      "sources": ["src/addon.c", "src/common.c", "src/notify.c", "src/process.c", "src/secure.c", "src/slab.c"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"],
      "libraries": ["-lm"]
    }
  ]
}
