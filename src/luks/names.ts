/**
 * What dm and cryptsetup accept as a mapping name, and what portcullis
 * accepts as a device path: written once, here, for the driver and the API's
 * schemas alike. Nothing a shell or a path could misread. `:` is in: os-brick
 * names a mapping `crypt-<basename of device_path>`, and an iSCSI by-path
 * link is `ip-10.0.0.1:3260-iscsi-iqn…:volume-…-lun-1` (udev keeps `:` as is).
 */
export const MAPPING_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,126}$/;
export const DEVICE_PATH_PATTERN = /^\/dev\/[A-Za-z0-9_./:+@-]+$/;

/** A /dev path with no ".." component. */
export function isDevicePath(path: string): boolean {
  return DEVICE_PATH_PATTERN.test(path) && !path.split('/').includes('..');
}
