// Exam station focus reporter, GNOME Shell 45 and later (ES modules). Same behaviour and D-Bus
// interface as extension.js (GNOME 42-44); `station install` installs this file as extension.js
// and sets shell-version for a GNOME Shell >= 45.
import Gio from 'gi://Gio';
import GLib from 'gi://GLib';
import Shell from 'gi://Shell';
import {Extension} from 'resource:///org/gnome/shell/extensions/extension.js';

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

export default class StationFocusExtension extends Extension {
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
