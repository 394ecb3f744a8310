// Exam station focus reporter, GNOME Shell 42-44 (the `imports` module system).
// GNOME Shell 45+ loads extension-45.js instead (ES modules); `station install` copies the right
// one. Both export the same D-Bus interface (see ../README.md and station/capture/focus_gnome.py).
//
// On enable: owns the well-known name be.station.Focus on the session bus, exports
// /be/station/Focus (interface be.station.Focus1) and emits FocusChanged every time the focused
// window changes or its title changes (event-driven: display "notify::focus-window" and the
// window's "notify::title"). On disable: releases the name, so the capture sees the name vanish
// and reports the focus source lost (journaled, alerted to the assessors within 2 s).
'use strict';

const { Gio, GLib, Shell } = imports.gi;

const BUS_NAME = 'be.station.Focus';
const OBJECT_PATH = '/be/station/Focus';
const VERSION = 1;
const IFACE = `
<node>
  <interface name="be.station.Focus1">
    <method name="GetFocus">
      <arg type="s" direction="out" name="app_id"/>
      <arg type="s" direction="out" name="wm_class"/>
      <arg type="s" direction="out" name="wm_instance"/>
      <arg type="s" direction="out" name="title"/>
      <arg type="u" direction="out" name="pid"/>
      <arg type="t" direction="out" name="window_id"/>
    </method>
    <signal name="FocusChanged">
      <arg type="s" name="app_id"/>
      <arg type="s" name="wm_class"/>
      <arg type="s" name="wm_instance"/>
      <arg type="s" name="title"/>
      <arg type="u" name="pid"/>
      <arg type="t" name="window_id"/>
    </signal>
    <property name="Version" type="u" access="read"/>
  </interface>
</node>`;

function describe(win) {
    if (!win)
        return ['', '', '', '', 0, 0];
    let app = '';
    try {
        const a = Shell.WindowTracker.get_default().get_window_app(win);
        app = a && !a.is_window_backed() ? a.get_id() || '' : '';   // not the tracker's "window:N"
    } catch (e) {
        app = '';
    }
    if (!app)
        app = win.get_gtk_application_id() || win.get_sandboxed_app_id() || '';
    const pid = win.get_pid();
    return [app, win.get_wm_class() || '', win.get_wm_class_instance() || '', win.get_title() || '',
        pid > 0 ? pid : 0, win.get_id()];
}

class StationFocus {
    enable() {
        this._win = null;
        this._titleId = 0;
        this.Version = VERSION;
        this._dbus = Gio.DBusExportedObject.wrapJSObject(IFACE, this);
        this._dbus.export(Gio.DBus.session, OBJECT_PATH);
        this._nameId = Gio.bus_own_name_on_connection(Gio.DBus.session, BUS_NAME,
            Gio.BusNameOwnerFlags.DO_NOT_QUEUE, null, null);
        this._focusId = global.display.connect('notify::focus-window', () => this._onFocus());
        this._onFocus();
    }

    disable() {
        if (this._focusId)
            global.display.disconnect(this._focusId);
        this._focusId = 0;
        this._watch(null);
        if (this._nameId)
            Gio.bus_unown_name(this._nameId);
        this._nameId = 0;
        if (this._dbus)
            this._dbus.unexport();
        this._dbus = null;
    }

    GetFocus() {
        return describe(this._win);
    }

    _watch(win) {
        if (this._win && this._titleId)
            this._win.disconnect(this._titleId);
        this._titleId = 0;
        this._win = win;
        if (win)
            this._titleId = win.connect('notify::title', () => this._emit());
    }

    _onFocus() {
        this._watch(global.display.focus_window);
        this._emit();
    }

    _emit() {
        if (this._dbus)
            this._dbus.emit_signal('FocusChanged', new GLib.Variant('(ssssut)', describe(this._win)));
    }
}

function init() {
    return new StationFocus();
}
