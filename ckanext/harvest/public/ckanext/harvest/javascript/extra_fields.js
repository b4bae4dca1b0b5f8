/* Modules of the harvest source form.
 *
 * harvest-type-change: on each source type radio; publishes the sandbox
 * topic "harvest-source-type-select" with the radio's value when it is
 * chosen, and at start-up for the checked one.
 *
 * harvest-extra-form-change: listens to that topic and shows the form groups
 * of the fields the chosen harvester adds to the form (option formItems,
 * data-module-form-items: {"<type>": ["<field name>", ...]}), hiding those
 * of the other harvesters. Other fields are left alone.
 */
this.ckan.module('harvest-type-change', function ($) {
  return {
    initialize: function () {
      var el = this.el;
      var sandbox = this.sandbox;
      el.on('change', function () {
        if (el.is(':checked')) {
          sandbox.publish('harvest-source-type-select', el.val());
        }
      });
      if (el.is(':checked')) {
        // After every module of the page is initialised (subscribers too).
        window.setTimeout(function () {
          sandbox.publish('harvest-source-type-select', el.val());
        }, 0);
      }
    }
  };
});

this.ckan.module('harvest-extra-form-change', function ($) {
  return {
    options: {
      formItems: {}
    },

    initialize: function () {
      $.proxyAll(this, /_on/);
      this.sandbox.subscribe('harvest-source-type-select', this._onTypeSelect);
    },

    teardown: function () {
      this.sandbox.unsubscribe('harvest-source-type-select', this._onTypeSelect);
    },

    _extraFields: function () {
      var all = {};
      $.each(this.options.formItems || {}, function (type, names) {
        $.each(names || [], function (index, name) {
          all[name] = true;
        });
      });
      return all;
    },

    _onTypeSelect: function (type) {
      var all = this._extraFields();
      var shown = (this.options.formItems || {})[type] || [];
      $('.control-group, .form-group').each(function () {
        var names = $(this).find('input[name], select[name], textarea[name]').map(function () {
          return this.name;
        }).get();
        var extra = $.grep(names, function (name) { return all[name]; });
        if (!extra.length) {
          return;
        }
        var visible = $.grep(extra, function (name) { return shown.indexOf(name) !== -1; });
        $(this).toggle(visible.length > 0);
      });
    }
  };
});
